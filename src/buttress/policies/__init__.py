"""The resilience policies. Import them from :mod:`buttress` itself."""
