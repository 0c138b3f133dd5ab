"""Target profiles ship here as YAML package data; `tsd_edge.targets` reads them."""
