"""Dataset readers: DiaretDB1 (v1.1 fused maps and v2.1 expert XMLs) and EyePACS/Kaggle folders."""
