"""Generated code for SeaweedFS's filer API (scripts/protogen.py, `make proto`); never edit."""
