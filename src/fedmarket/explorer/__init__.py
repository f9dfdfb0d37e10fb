"""The market explorer: a local web app over one market's chain data and run folders.

``data`` reads the chain (the only module that does), ``runs`` reads run folders and spec
files, ``app`` serves pages from both, ``command`` is ``fedmarket explorer``.
"""
