"""Generated code for SeaweedFS's filer API (services/processor/scripts/gen_filer_stubs.py); never edit."""
