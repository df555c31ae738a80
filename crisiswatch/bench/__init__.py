"""Benchmarks that print numbers: detection quality on labeled public data (NAB volume, TweetEval
sentiment) and the pipeline's speed and memory on a generated firehose."""
