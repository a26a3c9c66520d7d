"""``task=neighbors queries=DIR gallery=DIR extractors=[...]``: nearest gallery faces per extractor (Fig. 3)."""
from __future__ import annotations

from omegaconf import DictConfig

from facefd.evaluation.tasks.common import extract_kwargs, out_dir, plain, print_written, require, write_sample_record


def run(cfg: DictConfig) -> dict[str, str]:
    """k nearest gallery images of each query, in each extractor's feature space; a grid PNG and a table."""
    from facefd.evaluation.image_sets import ImageSet, folder_sample, set_features
    from facefd.evaluation.neighbors import NeighborResult, knn_search, write_neighbors
    from facefd.metrics.extractors import build_extractors
    from facefd.models.probe.features import FeatureCache

    require(cfg, "queries", "gallery")
    num, seed, skip = cfg.get("num_samples"), cfg.seed, cfg.data.skip_bad_images
    queries = ImageSet("queries", folder_sample(cfg.queries, num, seed, skip_bad_images=skip))
    gallery = ImageSet("gallery", folder_sample(cfg.gallery, num, seed, skip_bad_images=skip))
    cache = FeatureCache(cfg.cache_dir)
    results = []
    for label, extractor in build_extractors(plain(cfg.extractors)):
        q = set_features(extractor, queries, cache, **extract_kwargs(cfg))
        g = set_features(extractor, gallery, cache, **extract_kwargs(cfg))
        d, i = knn_search(q, g, cfg.k, cfg.distance, backend=cfg.search_backend)
        results.append(NeighborResult(label, d, i))
    paths = write_neighbors(queries.paths, gallery.paths, results, out_dir(cfg), cfg.distance, cfg.thumb, cfg.grid_rows)
    paths["sample"] = write_sample_record(cfg, {"queries": len(queries.paths), "gallery": len(gallery.paths)})
    return print_written(paths)
