"""fashion-enrich: a Beam pipeline that enriches fashion catalogs with image-derived metadata."""
