"""What real Alipay face-SDK terminals send, for tests that must let it through (COMPLIANCE
rule 11 refuses images and templates, never an SDK's own opaque values).

Copied from public material, as sent by real terminals:

- ``LIQUN_*``: a supermarket self-checkout app's Alipay face payment (smile-to-pay) in
  MoeRookie/LiQunALiFacePay, app/src/main/java/com/liqun/www/liqunalifacepay/data/bean/
  FacePayBean.java (commit 561f0b3): the ``alipay.trade.pay`` request of 2019-01-15 (the ftoken
  as ``auth_code``, the device-control SDK's signed ``terminal_params``) and the answer of
  ``zoloz.authentication.customer.smilepay.initialize`` (``zimId``, and ``zimInitClientData``:
  3,885 characters of URL-safe base64 of a protobuf, the longest opaque value a face terminal
  handles).
- ``CSDN_TERMINAL_PARAMS``: the ``terminal_params`` sample of Alipay's face-payment integration
  notes, as quoted at https://blog.csdn.net/weixin_39874809/article/details/114552290 (the
  account and signature partly masked with X there, as here).
- ``ZIM_META_INFO``: the start of a terminal's ``zimmetainfo`` (what the SDK's getMetaInfo gives
  the initialize call), from https://blog.csdn.net/dj1540225203/article/details/103406164.
"""

LIQUN_FTOKEN = "fp04cfdb2f73be7ca6d2abc946c7edb7abc"
LIQUN_TERMINAL_PARAMS = (
    '{"signature":"cs8+NV5THVFg5nxAUkvXhnVq0kmM4ViT3JRD4qseYucB",'
    '"credential":"fp04cfdb2f73be7ca6d2abc946c7edb7abc:1547517676:'
    'dsYPc__8RPJqV4-Q14Pyz8O8ERgamQXdIw98bNcIgpNbnu1OaAEAAA==","terminalType":"IOT"}'
)
LIQUN_ZIM_ID = "1e11fab27dbe2741fe1e66890bbc5f20c"
LIQUN_ZIM_INIT_CLIENT_DATA = (
    "CGQSABohMWUxMWZhYjI3ZGJlMjc0MWZlMWU2Njg5MGJiYzVmMjBjIvoSQ3BVTUNpRmtPR00zTkdWak16ZzJNRGxtWmpj"
    "ek9URTJZVFpqWlRBMk1UYzBNV0kyWW1NUVpDcnRDM3NpWTI5c2JDSTZleUowYjNCVVpYaDBYMjV2Wm1GalpTSTZJdWF5"
    "b2VhY2llYWpnT2ExaS1XSXNPaUV1Q0lzSW5SdmNGUmxlSFJmYVc1MFpXZHlhWFI1SWpvaTVvcUs2SVM0NTZlNzVZV2w1"
    "WnlJNVlhRklpd2lkRzl3VkdWNGRGOWhibWRzWlNJNkl1aXZ0LW1kb3VXUWtlV3hqLVc1bGVTNGl1YVd1ZWFSaE9XRGot"
    "V2t0Q0lzSW1GamRHbHZiazF2WkdVaU9sc2lOeUlzSWpjaUxDSTNJaXdpTnlJc0lqY2lMQ0kzSWl3aU55SXNJamNpTENJ"
    "M0lpd2lOeUpkTENKaWIzUjBiMjFVWlhoMElqb2k2Sy0zNW9xSzZJUzQ1cFMtNVlXbDVxR0c1WWFGNUwtZDVveUI1TGlO"
    "NVlxb0lpd2lkRzl3VkdWNGRGOXRZWGhmY21WamRIZHBaSFJvSWpvaTU2YTc2TC1jNUxpQTU0SzVJaXdpZFhCc2IyRmtS"
    "R1Z3ZEdoRVlYUmhJanBtWVd4elpTd2lkWEJzYjJGa1RXOXVhWFJ2Y2xCcFl5STZNU3dpZEc5d1ZHVjRkRjl6ZEdGNUlq"
    "b2k1cTJqNVp5bzVhU0U1NUNHSWl3aWRHOXdWR1Y0ZEY5c2FXZG9kQ0k2SXVpRXVPbURxT1M2cnVTNGdPZUN1U0lzSW14"
    "cFoyaDBJam94Tnpnc0luUnBiV1VpT2pJd0xDSjBiM0JVWlhoMFgzSmxZM1IzYVdSMGFDSTZJdW1kb09pX2tlUzRnT2VD"
    "dVNJc0luSmxkSEo1SWpvekxDSjBiM0JVWlhoMFgzRjFZV3hwZEhraU9pTG9yN2ZwbmFMbGtKSGxzWV9sdVpYa3VJcm1s"
    "cm5ta1lUbGc0X2xwTFFpTENKMGIzQlVaWGgwWDJKc2RYSWlPaUxsaG8zbXVJWG1tYkRrdUlEbmdya2lMQ0owYjNCVVpY"
    "aDBYMkpzYVc1cklqb2k1NXlvNTV5bzU1eThJbjBzSW5WcElqb2lPVGt5SWl3aWRYQnNiMkZrSWpwN0ltMXZaR1VpT2lJ"
    "eUxqQWlMQ0prWlhOcGNtVmtWMmxrZEdnaU9qRXlPREFzSW5Wd2JHOWhaRjlqYjIxd2NtVnpjMTl5WVhSbElqb3dMamNz"
    "SW1OdmJHeGxZM1JwYjI0aU9sc2lSR1Z3ZEdnaUxDSlFZVzV2SWl3aVUweEpVaUpkTENKMWNHeHZZV1JKYldGblpWUjVj"
    "R1VpT2lKcWNHVm5JaXdpYkc5blgyTnNZWE56YVdacFpYSWlPaUl4SXpJaWZTd2libTlEWVcxUVpYSnRhWE56YVc5dVYy"
    "OXlaSE1pT2lMbHZJRHBnSnJsa0k3bWlZM2xqNl9rdTZYa3ZiX25sS2psaUxmb2hMamxpcF9vZzczdnZJem92NXZsaGFY"
    "bGhZM2xyNGJtbDdia3U2TWlMQ0psYm5ZaU9qQXNJbVpoWTJWVWFYQnpJanA3SW14cGJXbDBRV3hsY25RaU9uc2ljbVYw"
    "ZFhKdVEyOWtaU0k2TWpBNUxDSnlhV2RvZEVKMWRIUnZibFJsZUhRaU9pTG1pSkhubjZYcGdaUGt1b1lpTENKMGFYUnNa"
    "U0k2SXVhY3F1aUR2ZWl2aHVXSXEtUzZ1dWlFdUNKOWZTd2lZV3huYjNKcGRHaHRJanA3SW5CdmMyVmZaR2x6ZEdGdVky"
    "Vk5ZWGdpT2pFMU1EQXNJbVY1WlVoM2NtRjBhVzhpT2pBdU1UWXNJbk4wWVdOclgzUnBiV1VpT2pFdU1Dd2lkR2h5WlhO"
    "b2IyeGtJanA3SWtKaGRFeHBkbVZ1WlhOeklqcGJNQzQxWFgwc0luQnZjMlZmY0dsMFkyZ2lPakF1TVRjc0lubDFibkZw"
    "VVhWaGJHbDBlU0k2TkN3aWNHOXpaVjk1WVhjaU9qQXVNaXdpYkdsMlpXNWxjM05mWTI5dFltbHVZWFJwYjI1eklqb2lR"
    "bUYwVEdsMlpXNWxjM01pTENKd2IzTmxYMmRoZFhOemFXRnVJam94TGpBc0luQnZjMlZmYlc5MGFXOXVJam94TGpBc0lu"
    "QnBkR05vVjJWcFoyaDBJam8wTENKd2IzTmxYM0JwZEdOb1RXbHVJam90TUM0eE55d2ljRzl6WlY5eVpXTjBkMmxrZEdn"
    "aU9qQXVNeXdpY0c5elpWOXBiblJsWjNKcGRIa2lPakF1T1RVc0ltUnBjMWRsYVdkb2RDSTZOQ3dpZVdGM1YyVnBaMmgw"
    "SWpveExDSndiM05sWDJ4cFoyaDBJam93TGpBc0luQnZjMlZmZVdGM1RXbHVJam90TUM0eUxDSmlZWFJNYVhabGJtVnpj"
    "MVJvY21WemFHOXNaQ0k2TUM0MUxDSnNiMmRmYkdWMlpXd2lPakFzSW5CdmMyVmZaR2x6ZEdGdVkyVk5hVzRpT2pJd01D"
    "d2laR2xtWm1WeUlqb3dMakUxTENKc2FYWmxibVZ6YzE5amIyMWlhVzVoZEdsdmJpSTZXeUpDWVhSTWFYWmxibVZ6Y3lK"
    "ZExDSnRZWGhmYVc5a0lqb3hMakFzSW5GMVlXeHBkSGxmYldsdVgzRjFZV3hwZEhraU9qSXdMQ0prWlhCMGFGOWpZV05v"
    "WlY5dWRXMGlPak1zSW5OMFlXTnJYM05wZW1VaU9qRXNJbTFwYmw5cGIyUWlPakF1TUgxOUVvQUNnRDN1MWlKZlgzM1hh"
    "NnA2blJ3NWEzaWpPYXJ3OVVyTmtnUmtESjZGYVNfSUhQTW0xb2tGdWplZ295ZWFQZEYyajczV0tpNE5FM3dqb3Z6N2U1"
    "dzh5MFZJdUdXMEw4NHYxN0c2X2RZM2dkQmZTVWlpbFBMVE1rc2Y1dkMzTWVhWmF2QWVCYzhqbFRvRUlacmZRNUd6XzlV"
    "Sl84VEJFbmxrOU14VnhHYlVYRGpwWHliUEtNS3U3bmU2bVJPQlg5dHRibWNGREh3NVYyRXNsdTFZTXhxX243MWlUTTFF"
    "MmZkMFhBZmhuNnAxTTNLbnhxZXZFY2JwcFpWd3JHbk9kQV9iRUQ0TzFZLURITHhwSHNUT3lKd05kN0prTS1OTTNpaGRJ"
    "WnZ0ZGFmNE40YnlocU1xdGRaTi1Xd2UwbWxwVnE5NDNrSHpFdW9YTmhMeG8xaVlvV0xxWncqowMKoAMKDmZhY2VwYXlJ"
    "bmZvTWFwEo0DeyJhY3Rpb25JbmRleCI6IjQiLCJoZWFydEJlYXRQcm90b2NvbCI6IntcImNvbnRlbnRcIjpcIntcXFwi"
    "ZGVzaXJlZFdpZmlTdGF0dXNcXFwiOntcXFwiY2hhbm5lbFxcXCI6XFxcIjEsMyw2XFxcIixcXFwicGVyaW9kRGV0YWls"
    "XFxcIjpcXFwiNjAwMDBcXFwiLFxcXCJwZXJpb2RNYWNzXFxcIjpcXFwiMTAwMDBcXFwiLFxcXCJyc3NpTWluXFxcIjpc"
    "XFwiLTgwXFxcIn0sXFxcImRlc2lyZWRNYWNoaW5lU3RhdHVzXFxcIjp7XFxcImludGVydmFsXFxcIjpcXFwiNjAwMDBc"
    "XFwifX1cIixcInJldENvZGVcIjpcIk9LX1NVQ0NFU1NcIixcInRpbWVzdGFtcFwiOjB9IiwidGFyZ2V0QWN0aW9uIjoi"
    "bW9iaWxlLTQiLCJhY3Rpb25Nb2RlIjoiZHluYW1pYyIsInByb2R1Y3RQYWNrYWdlIjoic21pbGVwYXkifTIFWjUxMTA6"
    "DuaIkOWKnyAoWjUxMTAp"
)
CSDN_TERMINAL_PARAMS = (
    '{"signature":"1FnjoEBasB8ullbr9xsy8E4XfhA6vXWVHm8rpzQ+XXXX",'
    '"credential":"280027188815876XXX:1521360763:F5WcujpCJeLwFrVB/sJWdrZLHrKey38gag/d0kn/7U1x+NozYgEAAA==",'
    '"terminalType":"IOT"}'
)
ZIM_META_INFO = (
    '{"apdidToken": "cgTHd27862BRCnJ1EG65tAiIFHOpR1Rnp3PXcV1jBd05DJPUagEAAA==", '
    '"appName": "com.alipay.zoloz.smile", "appVersion": "3.10.0.345", '
    '"bioMetaInfo": "4.2.0:287358976,2", "deviceModel": "K1", "deviceType": "android", '
    '"machineInfo": {"cameraDriveVer": "", "cameraModel": "AstraPro2", "cameraName": "AstraPro2", '
    '"cameraVer": "", "ext": "", "group": "", "machineCode": "XMBIffbAxfcDAMRi2oNJeqNA", '
    '"machineModel": "K1", "machineVer": "7.1.2"}, '
    '"merchantInfo": {"alipayStoreCode": "TEST", "appId": "2019042764337213", "areaCode": "TEST", '
    '"brandCode": "TEST", "deviceMac": "TEST", "deviceNum": "TEST_ZOLOZ_TEST", '
    '"geo": "0.000000,0.000000", "merchantId": "2088331468916805", "partnerId": "2088331468916805", '
    '"storeCode": "TEST", "wifiMac": "TEST", "wifiName": "TEST"}}'
)
