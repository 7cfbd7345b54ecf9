"""The classic EMG pipeline, numpy only: Hudgins time-domain features and a shrinkage LDA (the reference baseline)."""
