"""Evaluation runs: prompt sets, candidates' replies, the blind review queue, the judge, ratings per category, the report."""
