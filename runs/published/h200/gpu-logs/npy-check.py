
import glob, json, os, sys, numpy
bundle = sys.argv[1]
checked = 0
for rj in sorted(glob.glob(os.path.join(bundle, "cells", "*", "result.json"))):
    cell = os.path.dirname(rj)
    listed = json.load(open(rj)).get("details", {}).get("arrays", [])
    on_disk = sorted(os.path.basename(p) for p in glob.glob(os.path.join(cell, "*.npy")))
    assert sorted(a["file"] for a in listed) == on_disk, (rj, listed, on_disk)
    for a in listed:
        x = numpy.load(os.path.join(cell, a["file"]))
        assert list(x.shape) == a["shape"], (a, x.shape)
        assert str(x.dtype) == a["dtype"], (a, x.dtype)
        assert numpy.isfinite(x).all(), a
        if a["file"] == "image.npy":
            bin32 = numpy.fromfile(os.path.join(cell, "image.bin"), dtype="<f4")
            assert (x.astype(numpy.float32).ravel() == bin32).all(), cell
            assert x.sum() > 0, cell
        if a["file"] == "d_stack.npy":
            assert len(a["params"]) == x.shape[0], a
            for k, p in enumerate(a["params"]):
                bin32 = numpy.fromfile(os.path.join(cell, "d_%s.bin" % p), dtype="<f4")
                assert (x[k].astype(numpy.float32).ravel() == bin32).all(), (cell, p)
                assert numpy.abs(x[k]).max() > 0, (cell, p)
        checked += 1
# results.csv as pandas reads it: typed columns, no string parsing.
try:
    import pandas
except ImportError:
    pandas = None
if pandas is not None:
    df = pandas.read_csv(os.path.join(bundle, "results.csv"))
    for col in ["roi_fast_min", "roi_fast_max", "roi_slow_min", "roi_slow_max"]:
        assert df[col].dtype.kind == "i", (col, df[col].dtype)
    for col in ["image_sum", "image_max", "image_mean", "cell_wall_s"]:
        assert df[col].dtype.kind == "f", (col, df[col].dtype)
    assert (df["image_sum"] > 0).all()
    assert set(df["status"]) == {"PASS"}, set(df["status"])
print(checked)
