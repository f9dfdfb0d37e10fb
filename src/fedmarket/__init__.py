"""fedmarket: buy data and processing power from strangers to train a model on encrypted data."""

from fedmarket.errors import FedmarketError

__all__ = ["FedmarketError", "__version__"]
__version__ = "0.1.0"
