"""Head-CT data: the 75-finding taxonomy, the synthetic phantom, loaders, manifests and the dataset.

Submodules are imported on use (``from molre_lib.data.phantom import make_subject``) so that
importing the package stays cheap.
"""
