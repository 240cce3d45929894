"""edgecron: cron-driven maintenance for a content site behind Cloudflare."""

__version__ = "0.1.0"
USER_AGENT = f"edgecron/{__version__} (+https://github.com/edgecron/edgecron; cache warmer)"
