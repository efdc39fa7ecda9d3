"""Training and evaluation data: the procedural text-video corpus, dataset loaders (generic
manifests, MSR-VTT, VATEX) and their preparation into frame tensors."""
