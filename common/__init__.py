"""What every layer shares: atomic writes, the CLIs' one-line error contract, external tool lookup
and the default data folder. It imports no other package of the toolkit."""
