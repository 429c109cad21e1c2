"""The ``dtq`` command line: scripting and operations through the Console API."""
