"""The native kernels' sources (the C ABI header, the C and the CUDA implementations), shipped
inside the slimcore distribution as package data. Nothing here runs: slimcore.native.loader builds
them with the system's compiler (or nvcc) and loads the library through cffi."""
