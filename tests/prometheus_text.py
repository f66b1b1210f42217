"""Prometheus text exposition parsed with prometheus_client's parser, for asserting on metric values."""

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    """Every sample, keyed by its name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample_value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the exposition has no such sample (as a counter never incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
