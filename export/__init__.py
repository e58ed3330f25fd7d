"""comcloak.export: VJP rules over ``torch.fx`` graphs, ONNX export and TensorRT engine builds (DESIGN §4).
Nothing is exported yet; the engine runs the PyTorch reference backend."""
