"""``python -m recserve``: the service behind uvicorn with its limits (``recserve.server``)."""

from recserve.server import main

main()
