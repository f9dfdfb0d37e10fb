"""Differential privacy that does not trust the requester: the accountant and the owners' noise.

``accounting``: how much noise a task's (epsilon, delta) and epoch cap need, and how much is
spent (Google's ``dp-accounting``). ``noise``: the discrete Gaussian owners add to their blocks'
totals, shared by every crypto so the plaintext twin draws the very numbers CKKS encrypts.
``owner``: the owners' refusals (floor, clip, seed) and their check of a revealed model.
``policy``: what a task's ``[privacy]`` section asks of the crypto layer.
"""

# The fewest samples any decrypted total may sum, whatever a spec says (docs/privacy.md: it
# keeps the cheap exact reconstructions of a block out; at least n_features + 2 as well).
PROTOCOL_FLOOR = 64
