import torch, os, sys, zipfile
from torch.export import Dim
class Tied(torch.nn.Module):
    def forward(self, a, b):
        return a * 2 + b
class Derived(torch.nn.Module):
    def forward(self, x, y, z):
        # x [B, 8k], y [B, k, 8], z [B, k+1]
        return x.reshape(x.shape[0], -1, 8) + y, z[:, 1:] * 2
name = sys.argv[1]
B = Dim("batch", min=1, max=64); S = Dim("seq", min=1, max=512); k = Dim("k", min=1, max=32)
if name == "tied":
    m = Tied(); args = (torch.randn(2, 9), torch.randn(2, 9)); ds = {"a": {0: B, 1: S}, "b": {0: B, 1: S}}
else:
    m = Derived(); args = (torch.randn(2, 24), torch.randn(2, 3, 8), torch.randn(2, 4))
    ds = {"x": {0: B, 1: 8*k}, "y": {0: B, 1: k}, "z": {0: B, 1: k+1}}
ep = torch.export.export(m, args, dynamic_shapes=ds)
p = torch._inductor.aoti_compile_and_package(ep, package_path=f"/tmp/{name}.pt2")
with zipfile.ZipFile(p) as z:
    z.extractall(f"/tmp/{name}")
