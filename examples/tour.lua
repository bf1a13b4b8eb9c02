-- examples/tour.lua — a five-minute tour of cunet: tensors, broadcasting, reductions, autograd.
--   ./cunet examples/tour.lua
local cn = require "cunet"

cn.seed(7) -- one generator: the same numbers on every machine and thread count

-- Tensors print like PyTorch; dims and indices are 1-based, like Lua.
local x = cn.randn{4, 3}
print("x =", x)
print("x[2] =", x[2], "x[{2, 3}] =", x[{2, 3}])

-- Views share storage; broadcasting follows NumPy.
local col = cn.arange(4):view{4, 1}
print("x + col * 10 =", x + col * 10)
print("max over dim 2:", x:max(2))

-- Autograd: fit y = 3x - 2 with gradient descent on a tape.
local xs = cn.linspace(-1, 1, 64):view{64, 1}
local ys = xs * 3 - 2 + cn.randn{64, 1} * 0.05
local w = cn.zeros{1, 1}:requires_grad(true)
local b = cn.zeros{1}:requires_grad(true)
for step = 1, 200 do
  local loss = ((xs:matmul(w) + b - ys) ^ 2):mean()
  loss:backward()
  cn.no_grad(function()
    w:sub_(w.grad * 0.1)
    b:sub_(b.grad * 0.1)
  end)
  w.grad, b.grad = nil, nil
  if step % 50 == 0 then print(string.format("step %3d  loss %.5f", step, loss:item())) end
end
print(string.format("fitted w = %.3f, b = %.3f (true 3, -2)", w:item(), b:item()))
print(string.format("tensor memory: %d bytes live, %d bytes peak", cn.memory().live, cn.memory().peak))
