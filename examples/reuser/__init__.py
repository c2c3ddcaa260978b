"""EcoWatt Conseil, the demo reuser: a separate web app that a citizen authorises through Tiers
(PAR, PKCE S256, private_key_jwt, DPoP). Run it with `python -m examples.reuser.app`."""
