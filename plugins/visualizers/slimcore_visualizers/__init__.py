"""slimcore's observers of a run: the JSON exporter now; the seven charts and the PNG
dashboard follow (issue: charts and exports)."""
