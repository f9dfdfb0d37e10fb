"""Differential privacy that does not trust the requester: the accountant and the owners' noise.

``accounting``: how much noise a task's (epsilon, delta) and epoch cap need, and how much is
spent (Google's ``dp-accounting``). ``noise``: the discrete Gaussian owners add to their blocks'
totals, shared by every crypto so the plaintext twin draws the very numbers CKKS encrypts.
"""
