"""The `embcache` command line (typer): `app.py` defines the app and every command group,
one module per group registers its commands, `main.py` imports them all."""

if __name__ != "embcache.cli":   # imported as a top-level `cli`, e.g. from the repository root
    raise ImportError(f"import embcache.cli, not {__name__}: embcache's layers install as its subpackages")
