"""comcloak.kernels: CUDA kernels (``.cu`` + header + test each) built by the root CMakeLists.txt, each with a
torch reference. None ship yet; the engine uses the torch implementations."""
