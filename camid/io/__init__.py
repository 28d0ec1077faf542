"""Input and output of files: the one image loader, EXIF, input expansion, atomic writes."""
