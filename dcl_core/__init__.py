"""dcl_core: the contrastive training engine (DCL, DCLW, SimCLR).

Importing this package must stay cheap: it imports nothing heavy, so that
`dcl_core.config` can be used by the API without pulling in torch.
"""

__version__ = "0.1.0"
