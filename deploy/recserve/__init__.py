"""recserve: ONNX Runtime behind HTTP for recpipe's registry. Needs ONNX files and manifests only."""
