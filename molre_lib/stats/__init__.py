"""Statistics on predictions: AUROC with bootstrap CIs, DeLong tests with multiplicity corrections, calibration."""
