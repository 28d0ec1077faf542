"""Statistics shared by camid's measurements: ROC/EER, association, bootstrap."""
