"""Statistics over results: several seeds of one candidate, confidence intervals, leaderboards."""
