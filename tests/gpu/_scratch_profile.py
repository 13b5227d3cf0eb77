import glob
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(4)
from yoloquant.artifacts import OnnxModel
from yoloquant.backends.ort import cuda as c
from yoloquant.data.images import read_image
from yoloquant.data.letterbox import preprocess
from yoloquant.postprocess.gpu import decode_pending

ims = [read_image(f) for f in sorted(glob.glob("assets/coco64/images/*.jpg"))][:16]


def t(f, n=30):
    for _ in range(3):
        f()
    s = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        s.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(s)), 3)


print("prep16 serial", t(lambda: [preprocess(i, 640, mode="predict") for i in ims]))
pool = ThreadPoolExecutor(16)
print("prep16 pool", t(lambda: list(pool.map(lambda i: preprocess(i, 640, mode="predict"), ims))))
xs = [preprocess(i, 640, mode="predict")[0] for i in ims]
print("stack", t(lambda: np.stack(xs)))
d = "/tmp/pytest-of-root/pytest-0/gpu-models0/"
orig = c.CudaEngineBuilder.provider_options
for nhwc in [False, True]:
    if nhwc:
        c.CudaEngineBuilder.provider_options = lambda self, s: {**orig(self, s), "prefer_nhwc": "1"}
    try:
        e = c.CudaEngineBuilder(uint8_input=True, batch=16, tf32=True).build(OnnxModel.load(d + "dynamic/yolov8n-fp16.onnx"))
        x = np.stack(xs)
        print("nhwc", nhwc, "infer-nodl16", t(lambda: e.infer_async(x, download=False).wait()))
        print("nhwc", nhwc, "infer+gpu-decode16", t(lambda: decode_pending(e.infer_async(x, download=False), e, conf=0.25, multi_label=False)))
        e.close()
        for p in ["fp16", "fp32"]:
            e = c.CudaEngineBuilder(uint8_input=True, batch=1, tf32=True, cuda_graph=True).build(OnnxModel.load(d + f"static/yolov8n-{p}.onnx"))
            print("nhwc", nhwc, p, "b1 graph infer", t(lambda: e.infer(x[:1]), 200), "nodl", t(lambda: e.infer_async(x[:1], download=False).wait(), 200), flush=True)
            e.close()
    except Exception as ex:
        print("ERR", nhwc, ex)
