"""Every party its own process: the requester as a Flower ServerApp, owners and processors as
a ClientApp on SuperNodes, settling on a real Ethereum node. See docs/deploy.md."""
