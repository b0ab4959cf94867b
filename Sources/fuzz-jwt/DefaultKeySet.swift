// The key set a token is verified against when the input holds no key set of its own: the
// published example keys of config/examples/jwks.json (RS256 "example-rsa", ES256 "example-ec"),
// the same RSA key without an `alg` ("example-rsa-any", for PS256), and P-384, Ed25519 and HMAC keys
// made for the fuzzer. The seeds in Tests/fuzz/jwt/corpus/ hold tokens these keys signed (the
// private halves are not kept: the seeds are all the fuzzer needs).
let defaultKeySet = """
{"keys":[
  {"kty":"RSA","kid":"example-rsa","use":"sig","alg":"RS256","n":"2hKAUPXS0H0_aVx3ODT3W8MQre4ECD-Xg3u56ItKhEQO2n\
uM3l_yB-h5Q2u0HeuompNdtuV-GYiobCWJAYbLYFGfs26FO5QHUWyVov1I7SSuVHGWqEmYhpLHPBsnza_5zUBVcbRFUQNtun9uTXX3h9Op1kVN\
n5tlcF9L2mNs977z3VmZ6JvmVNML5oaXloHQvAtLyivGAxs2kIe42QkIiOsehJNjKd2V-gD773G9d4xNiDcTWNqxiP-CIJw8ZyXgos750ZC8r6\
K2vUFluzCparnGWpL6f71QAUyaZscVZ2mt5ETYxM9gLMxajZkzlwWzIFnkiHHo5dce8__ptEaMZQ","e":"AQAB"},
  {"kty":"RSA","kid":"example-rsa-any","n":"2hKAUPXS0H0_aVx3ODT3W8MQre4ECD-Xg3u56ItKhEQO2nuM3l_yB-h5Q2u0HeuompNd\
tuV-GYiobCWJAYbLYFGfs26FO5QHUWyVov1I7SSuVHGWqEmYhpLHPBsnza_5zUBVcbRFUQNtun9uTXX3h9Op1kVNn5tlcF9L2mNs977z3VmZ6J\
vmVNML5oaXloHQvAtLyivGAxs2kIe42QkIiOsehJNjKd2V-gD773G9d4xNiDcTWNqxiP-CIJw8ZyXgos750ZC8r6K2vUFluzCparnGWpL6f71Q\
AUyaZscVZ2mt5ETYxM9gLMxajZkzlwWzIFnkiHHo5dce8__ptEaMZQ","e":"AQAB"},
  {"kty":"EC","kid":"example-ec","use":"sig","alg":"ES256","crv":"P-256","x":"spPS4couxKa7Pbs455HPkTw7p-ECtT79zC\
P9MM04KuU","y":"8TO3VHKiRgUgZrEVvP7g71eOSVu22aEnbdZZwPsXcOE"},
  {"kty":"EC","kid":"fuzz-ec384","use":"sig","crv":"P-384","x":"KMqDrFRZNNEvpiQ_-hHci0hsCf8_an6E3c_OfOkC5Z2XLP1I\
fVyz8LIV7kGID0zl","y":"vN_6RaLap_EzvDUJyH1kVfTYNPaMTBMqQpVBs4EOrmoyU5FaJepWlwYYaEjT9dOU"},
  {"kty":"OKP","kid":"fuzz-ed25519","crv":"Ed25519","x":"9DyOGwtg0LEhFNrCzS_MeIAgp8uR03BunUHW3-OVceM"},
  {"kty":"oct","kid":"fuzz-oct","k":"BzxxptsQRXqv5BlOg7jtIleMwfYrYJXK_zRpntMIPXKn3BFGe7DlGk-Eue4jWI3C9yxhlssANWq\
f1Ak-c6jdEg"}
]}
"""
