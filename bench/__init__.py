"""`make bench` / `python -m bench`: Discovery's figures against what its storage allows, every
service in its own process on loopback (see bench/__main__.py for the scenarios)."""
