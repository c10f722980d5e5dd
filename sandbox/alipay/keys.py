"""Fixed RSA-2048 TEST keys of the sandbox Alipay, committed on purpose (docs/alipay-sandbox.md).

* ``ALIPAY_PRIVATE_KEY_PEM`` / ``ALIPAY_PUBLIC_KEY_PEM``: the sandbox's own "Alipay" key pair. It
  signs every response and notification; testers configure the public key as "Alipay public key".
  Fixed, so SDK configurations survive sandbox restarts. The private key is published in this
  repository, so anything it signs proves nothing outside the sandbox: a production gateway must
  never accept ``ALIPAY_PUBLIC_KEY_PEM`` (``ALIPAY_PUBLIC_KEY_SHA256`` is its fingerprint, for a
  refusal check). Never logged and never served by the sandbox.
* ``TEST_APP_PRIVATE_KEY_PEM`` / ``TEST_APP_PUBLIC_KEY_PEM``: the merchant key pair of the default
  test app (``sandbox.testvalues.ALIPAY_DEFAULT_APP_ID``), PKCS#1 as the official Python SDK wants
  it. Served by ``GET /_control/test-values`` like the e-card test secret.

Generate your own app key pair for anything else and register it with ``POST /alipay/apps``.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization

__all__ = [
    "ALIPAY_PRIVATE_KEY_PEM",
    "ALIPAY_PUBLIC_KEY_PEM",
    "ALIPAY_PUBLIC_KEY_SHA256",
    "TEST_APP_PRIVATE_KEY_PEM",
    "TEST_APP_PUBLIC_KEY_PEM",
]

ALIPAY_PRIVATE_KEY_PEM = """\
-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEA0YTR+6B71ZAzKJw92C3VdLHtM+SCdWvLWGE9DS7ZhEk1Ecit
tbTniOC5b/1PApz/GKA9wkn6hXYUQjoQj/IY2C+AXe4TTAmu4antCZLbZ7vJhEKe
+uDlDrQZ73QL7p/lcQ2296C8cNanmKhnu5Di1Tq/OecUwxlsqSiN+1XiP9wigE2x
4dRBp8RXefMV0805M+AFTOU0kgerTxBdbzJqw83eIIiMNtw5EZEtVW795NNcq2dL
uQa5Kf610Vn6pCqLiIAxd49ItTrSv+6KDf9hY3A1F5FvoaPHeDuEjHBkU+EQYZhm
M/liY26PsFoEyqFDqrzfO9K1BamtmABpX5YkRwIDAQABAoIBAAG09GVf4jjHRkHR
vNRxHyWM7R+rzP8TsNVLlkzWsZGMOFRb3BDR/fbiZpa83tlos2odPnn1BbqNNgIK
HHUHv5MQ5AAf5Re//Ng8Y0CqNrZdupKkwxj/hW4wVZ70eF2dZagDn0ndWdumrAV1
QPV8UZTAhN4Xl1ab81CRErY8j2DLMJ44tx0jNmGl3CIkTqDWcH37KxoxyGsQi5SD
fDJMc068h3Ae3C9uynLqoXzMIHWKCFmvUljDImdbmiMEh2JY9PdU5FM/PYfAoV5W
DUyb5z0HIgC+ojRDUVVrlJ5uHCD98VD5ydodY2clihNrteLtF+aqsaHBkH9fx/qw
6lf0X/UCgYEA/ghczpga4CiZjV/2Ug/boyUuITibp40AU6Spic0/OWxf1g5TO98j
sBY6382xGw4X+QWA1NW6tMew5TqKY/Pxa/df2B6E0iFHu3waqyK3TCe6jyQv0oMI
YRJiO2aPba8/lOS8aqL1wo50UeoUVmVbdi8XKdc0g1juxMOjQ5H74eMCgYEA0yQ0
uAM5+JpuKrfQ9B/gpVfiU9GAWb1EN14hoaEpCVu6SGUc8/LAaFMwhF7VmAGyw3Ef
LElv/scXDz/Ae9km5WkDXE1PVDOvzu0Hr83KrGbUXmvoYAi7Ve7hXtDZ70IPqlM8
uwaEmUtLpeQaYTpeMhlm8aQasScbNqoHA7nKcU0CgYEAt22eZeba8SUfyz+RgyvE
Mod0SbSwYEmmBL+PU9uKXZJtmQj6/O5gvJMwq83ApoKEuOFKZ2R0zniquLqOlyHc
H1OeN1XCHmC9hRlVwGDu7eR6B0Xf6ieHc2Bs4etqgY7bYE3R50YIIxXt1AAr8z54
zluuZB3q4zTiI94IE5BjynUCgYAdKBDHoFpvBBRWfc+zBnvlGT+9x15sBgDXjH4k
bbbW/f25ZY0b+terEGHQxa/FL+bZqlNdsD5w9lku1+TitVfzsg6uvlZIEGMktgKr
ukVUjVaiO1B5gnssILKqfzi5G2xCXwAx63KAIK+vltI1vvOnA279y2WMNRRC9jPF
xfA4uQKBgBILmtCazCTqasVPkLMl9dVpGvvdv4Ydg2M0S6iEgkuUtN1UuhT4eq6K
zNg0jTG4zZYJZdQ7FDzPmGL0E7JJOg8At9xi8wZZ5VMGe6Tq2T3c8jWmgBJV3LqT
O4N68bfDgz68ChyuMMeAhZa05/lUTCXm1ltl1k/wxnnW5WanFfDH
-----END RSA PRIVATE KEY-----
"""

ALIPAY_PUBLIC_KEY_PEM = """\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0YTR+6B71ZAzKJw92C3V
dLHtM+SCdWvLWGE9DS7ZhEk1EcittbTniOC5b/1PApz/GKA9wkn6hXYUQjoQj/IY
2C+AXe4TTAmu4antCZLbZ7vJhEKe+uDlDrQZ73QL7p/lcQ2296C8cNanmKhnu5Di
1Tq/OecUwxlsqSiN+1XiP9wigE2x4dRBp8RXefMV0805M+AFTOU0kgerTxBdbzJq
w83eIIiMNtw5EZEtVW795NNcq2dLuQa5Kf610Vn6pCqLiIAxd49ItTrSv+6KDf9h
Y3A1F5FvoaPHeDuEjHBkU+EQYZhmM/liY26PsFoEyqFDqrzfO9K1BamtmABpX5Yk
RwIDAQAB
-----END PUBLIC KEY-----
"""

TEST_APP_PRIVATE_KEY_PEM = """\
-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAnYWIrbKmU1T4Jj+0/bgl9AUByRcyCmakY23DKC+Mr5UP2DM1
CRBaGK2AvMqfgHYmDGfZSOSP4rTNFpXRNzmHI/bOtiyE5JaGHYAI6AI+s+ssAi1U
amY1XUJ/23ZZkpsSZdUUvMCsUb39lXSYTIo0a/wuCz5iGZZ9j9UaRwTPNm26rwBz
+buGN+8uSjmDwfjWZRdH4MXz+gpUPqyCEw9rYXxi0ljAJqmqhKCta0XHKPhjPt6S
jwb9eb43Ksjv7oy0qkdDzVhHtxUai5aGZlmkH+3bXNfhIROdRY7TaRnd4NqMOEl2
cvcUOHB0e4HlEokDy5NPOrCa1PoA683HpPgptQIDAQABAoIBABJ0p0dmo4sm7O4a
T7vcXAIDpipn39KNJRyLKy7lp0+ZIOKdWUznEA9NIMS93sM/1IRmlHQwZ1VSBqdr
RTh5soY5sA1zGNzpb+w76I86WBtfZegZZIcU05LKLE3Lx4HgTl8FAKl+z5HCN1hP
8VoiZTLzuHdTx02lLq/v8WS5wQdo06C/e7ktuSlZyVFnqUZMY7XDVTs9ZKlaHMbX
Qcz5lhE8sOiHXAhuJcPJtzcRjXqH7lnZgZ68mtgp7SC5/1r8apnkv6PZKtf1XFXg
yrTa8ioPPUY6gqJs028xKzEzP8EU5p241KqWLPKI4wvIUWCtYVTwHNB6yrE8wdWB
LSPuXjECgYEA2PCZa2GZDbVRnlIHaW4roQI9mDUT5jMYr0cjtgBUGBla1qLq+rb5
TfTEU1zzfVrIuTgF52IP5cdUVVJKPJ66FlUASuqj0jCeBxlbeM/YYTrp7/ucmGCu
50b3CB7I6ix49ZtuDk5HR5yMqRDS3RFTQKd/6IVKUzWqRuRmgY9QvmkCgYEAueIs
I8LHMQs15zaomnQnBprxdSxqoGGD1dg+aUeLuzU8Q79Dvoq8+WUNk/Uw4VUMguBc
Oouo11vWcZXYKkkcw24WS3+b0IWswo5IK2OKNmATbZKuhyYyrCidSEkmuoQIg6vt
rkbD6zD1Mf9vGMZbSTTdP7bt+9+K1fnEXtX5f20CgYEAhQUafY5to8svTa2sn8gO
9n4COKcrGXbxRuCPFBUle1Vorr1c6fhx64wPKbKQFqgo9fFVJWiqqNFNc7euj3cg
UXszX7x6UPLAo0e4H98KJaxTL3SPs5ttA6Eu7gq6VWSJksgIdrsm19E1KqGHOkha
TQWn13KLfXQlgayg8gZnkykCgYEAqcPEaEylu0bvzeD/j0Bxu/iaeVc9cohc7Vr3
dRNgrHNsPLtb1ZPED0mZYv3VzJXuPUFHOjj+1OENMuOVbtkjKeFK/1zmI0VSiMWF
aAsa2ZpZZANI3immsdDOBIy6kDGxzP+irT34BL7L0QPmpQvTp0JepqgdJaH9nHrm
O27U1OkCgYB7SyPu0gn9/Y7mNW6/f9dHvgZwNKlDVkl5TL726mnPyrOwtns+UtqY
gXJR99s15OfvUBNtilG2m0y6yNF62j9gvIRQgkUXQme2HjKHuzM9sMTFdJ0bPkCH
NNmuv/Jzc+tkqPxd6GCCqnkeM4n0oAiqBRuPIw5+/EajGG5iFdPVZA==
-----END RSA PRIVATE KEY-----
"""

TEST_APP_PUBLIC_KEY_PEM = """\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnYWIrbKmU1T4Jj+0/bgl
9AUByRcyCmakY23DKC+Mr5UP2DM1CRBaGK2AvMqfgHYmDGfZSOSP4rTNFpXRNzmH
I/bOtiyE5JaGHYAI6AI+s+ssAi1UamY1XUJ/23ZZkpsSZdUUvMCsUb39lXSYTIo0
a/wuCz5iGZZ9j9UaRwTPNm26rwBz+buGN+8uSjmDwfjWZRdH4MXz+gpUPqyCEw9r
YXxi0ljAJqmqhKCta0XHKPhjPt6Sjwb9eb43Ksjv7oy0qkdDzVhHtxUai5aGZlmk
H+3bXNfhIROdRY7TaRnd4NqMOEl2cvcUOHB0e4HlEokDy5NPOrCa1PoA683HpPgp
tQIDAQAB
-----END PUBLIC KEY-----
"""


def _spki_sha256(pem: str) -> str:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


# SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex.
ALIPAY_PUBLIC_KEY_SHA256 = _spki_sha256(ALIPAY_PUBLIC_KEY_PEM)
