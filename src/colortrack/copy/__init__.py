"""The copy operator: its plain definition (`reference`) and the fast path that tracking runs."""
