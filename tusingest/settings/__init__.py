"""Settings: one environment reader (`env`), a frozen section per part of the app (`auth`,
`uploads`, `pipeline`, `storage`, `tracing`, `ratelimits`), and the whole (`app`), which only
the wiring reads."""
