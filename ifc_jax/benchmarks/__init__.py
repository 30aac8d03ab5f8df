"""Speed measurements: data pipeline, encoder schemes, inference, train step (`benchmark`)."""
