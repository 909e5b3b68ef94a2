"""Audio in: finding recordings, decoding any format to 48 kHz blocks, the guards on what a file
may claim or hold, and fixed windows with their quality figures. No torch."""
