"""Code generated from proto/ by scripts/gen_rpc.py; never edited by hand."""
