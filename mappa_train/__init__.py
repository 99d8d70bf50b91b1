"""mappa_train: the reference trainer for MAPPA teams (``python -m mappa_train``).

Not implemented yet: it arrives with the trainer issue. The package exists so the layout is final.
"""
