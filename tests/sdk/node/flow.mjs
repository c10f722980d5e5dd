// The Node alipay-sdk against the CampusPay sandbox Alipay: pay -> query -> refund -> refund query
// -> cancel -> query, every response checked by the SDK's own signature verification
// (validateSign), the payment notification checked by the SDK's checkNotifySignV2, and a response
// with a bad sign (magic amount ending 84) rejected by the SDK.
//
//   SANDBOX_URL=http://127.0.0.1:8090 node flow.mjs
//
// Only the server URL differs from a production setup. ALIPAY_APP_ID, ALIPAY_APP_PRIVATE_KEY and
// ALIPAY_PUBLIC_KEY default to the sandbox's default test app (GET /_control/test-values).
// Prints one JSON summary line on stdout; exits non-zero on any failure.
import http from 'node:http';
import { AlipaySdk } from 'alipay-sdk';

const base = (process.env.SANDBOX_URL || 'http://127.0.0.1:8090').replace(/\/$/, '');
const school = process.env.FACE_SCHOOL || 'school-demo';
const student = process.env.FACE_STUDENT || 'stu_alice';

async function json(path, body) {
  const response = await fetch(base + path, body === undefined ? {} : {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}

async function faceToken() {
  return (await json('/face/test-tokens', { school, student })).face_token;
}

// A notify_url of our own: collects trade_status_sync notifications and answers "success".
function notificationReceiver() {
  const received = [];
  const waiters = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', chunk => { body += chunk; });
    req.on('end', () => {
      received.push(Object.fromEntries(new URLSearchParams(body)));
      res.end('success');
      while (waiters.length) waiters.shift()();
    });
  });
  return new Promise(resolve => server.listen(0, '127.0.0.1', () => {
    const url = `http://127.0.0.1:${server.address().port}/alipay/notify`;
    const next = (predicate, timeoutMs = 15000) => new Promise((ok, fail) => {
      const deadline = setTimeout(() => fail(new Error('no notification arrived')), timeoutMs);
      const check = () => {
        const found = received.find(predicate);
        if (found) { clearTimeout(deadline); ok(found); } else waiters.push(check);
      };
      check();
    });
    resolve({ url, next, close: () => server.close() });
  }));
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

async function main() {
  let appId = process.env.ALIPAY_APP_ID;
  let privateKey = process.env.ALIPAY_APP_PRIVATE_KEY;
  let alipayPublicKey = process.env.ALIPAY_PUBLIC_KEY;
  if (!appId || !privateKey || !alipayPublicKey) {
    const values = (await json('/_control/test-values')).alipay;
    appId = values.default_app.app_id;
    privateKey = values.default_app.app_private_key;
    alipayPublicKey = values.alipay_public_key;
  }
  const sdk = new AlipaySdk({ appId, privateKey, alipayPublicKey, gateway: `${base}/alipay/gateway.do` });
  const signed = { validateSign: true };
  const receiver = await notificationReceiver();
  const outTradeNo = `node-${Date.now()}`;
  const summary = {};
  try {
    const pay = await sdk.exec('alipay.trade.pay', {
      notify_url: receiver.url,
      bizContent: {
        out_trade_no: outTradeNo,
        scene: 'security_code',
        auth_code: await faceToken(),
        product_code: 'FACE_TO_FACE_PAYMENT',
        subject: '午餐 lunch',
        total_amount: '12.50',
      },
    }, signed);
    expect(pay.code === '10000', `pay: ${JSON.stringify(pay)}`);
    summary.pay = { code: pay.code, tradeNo: pay.tradeNo, buyerUserId: pay.buyerUserId };

    const notification = await receiver.next(n => n.out_trade_no === outTradeNo);
    summary.notification = {
      trade_status: notification.trade_status,
      verified: sdk.checkNotifySignV2(notification),
      tampered_rejected: !sdk.checkNotifySignV2({ ...notification, total_amount: '0.01' }),
    };
    expect(summary.notification.verified, 'notification signature did not verify');
    expect(summary.notification.tampered_rejected, 'a tampered notification verified');

    const query = await sdk.exec('alipay.trade.query', { bizContent: { out_trade_no: outTradeNo } }, signed);
    expect(query.tradeStatus === 'TRADE_SUCCESS', `query: ${JSON.stringify(query)}`);
    summary.query = { code: query.code, tradeStatus: query.tradeStatus };

    const refund = await sdk.exec('alipay.trade.refund', {
      bizContent: { out_trade_no: outTradeNo, refund_amount: '2.50', out_request_no: `${outTradeNo}-r1` },
    }, signed);
    expect(refund.code === '10000' && refund.fundChange === 'Y', `refund: ${JSON.stringify(refund)}`);
    summary.refund = { code: refund.code, fundChange: refund.fundChange, refundFee: refund.refundFee };

    const refundQuery = await sdk.exec('alipay.trade.fastpay.refund.query', {
      bizContent: { out_trade_no: outTradeNo, out_request_no: `${outTradeNo}-r1` },
    }, signed);
    expect(refundQuery.refundStatus === 'REFUND_SUCCESS', `refund query: ${JSON.stringify(refundQuery)}`);
    summary.refund_query = { code: refundQuery.code, refundAmount: refundQuery.refundAmount };

    const cancel = await sdk.exec('alipay.trade.cancel', { bizContent: { out_trade_no: outTradeNo } }, signed);
    expect(cancel.code === '10000' && cancel.action === 'refund', `cancel: ${JSON.stringify(cancel)}`);
    summary.cancel = { code: cancel.code, action: cancel.action, retryFlag: cancel.retryFlag };

    const after = await sdk.exec('alipay.trade.query', { bizContent: { out_trade_no: outTradeNo } }, signed);
    expect(after.tradeStatus === 'TRADE_CLOSED', `query after cancel: ${JSON.stringify(after)}`);
    summary.query_after_cancel = { tradeStatus: after.tradeStatus };

    // Magic amount ending 84: the sandbox answers with a sign that does not verify.
    try {
      await sdk.exec('alipay.trade.pay', {
        bizContent: {
          out_trade_no: `${outTradeNo}-bad`,
          scene: 'security_code',
          auth_code: await faceToken(),
          subject: 'lunch',
          total_amount: '1.84',
        },
      }, signed);
      summary.bad_sign_rejected = false;
    } catch (err) {
      summary.bad_sign_rejected = err.name === 'AlipayRequestError' && String(err.message).includes('验签失败');
    }
    expect(summary.bad_sign_rejected, 'the SDK accepted a response with a bad sign');
  } finally {
    receiver.close();
  }
  console.log(JSON.stringify(summary));
}

main().catch(err => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
