"""Learned labels: an analyst's marks on windows, a linear scorer fitted on their stored vectors."""
