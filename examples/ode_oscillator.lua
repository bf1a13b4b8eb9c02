-- examples/ode_oscillator.lua — a damped oscillator solved by cn.odeint, next to its exact solution.
--   ./cunet examples/ode_oscillator.lua
--
-- x'' = -ω² x - 2ζω x', x(0) = 1, x'(0) = 0, underdamped (ζ < 1): with ω_d = ω √(1 - ζ²),
--   x(t) = e^(-ζωt) (cos ω_d t + ζω/ω_d sin ω_d t).
-- cn.ode.second_order turns the acceleration into the first-order system on the state {x, v};
-- rk4 takes fixed steps, dopri5 chooses its own to meet rtol/atol.
local cn = require "cunet"

local omega, zeta = 2.0, 0.1
local omega_d = omega * math.sqrt(1 - zeta * zeta)
local function exact(t)
  return math.exp(-zeta * omega * t) * (math.cos(omega_d * t) + zeta * omega / omega_d * math.sin(omega_d * t))
end

local f = cn.ode.second_order(function(t, x, v) return x * (-omega * omega) - v * (2 * zeta * omega) end)
local z0 = {cn.tensor{1.0}, cn.tensor{0.0}}
local ts = {}
for i = 0, 10 do ts[#ts + 1] = i end

local rk4, rk4_stats = cn.odeint(f, z0, ts, {method = "rk4", step_size = 0.1})
local dp5, dp5_stats = cn.odeint(f, z0, ts, {method = "dopri5", rtol = 1e-6, atol = 1e-8})

print(string.format("damped oscillator x'' = -w^2 x - 2 zeta w x',  w = %g, zeta = %g, x(0) = 1, x'(0) = 0", omega, zeta))
print()
print(string.format("%5s  %12s  %12s  %9s  %12s  %9s", "t", "exact x(t)", "rk4", "error", "dopri5", "error"))
local worst_rk4, worst_dp5 = 0, 0
for i, t in ipairs(ts) do
  local want = exact(t)
  local a, b = rk4[1][i][1]:item(), dp5[1][i][1]:item()
  worst_rk4 = math.max(worst_rk4, math.abs(a - want))
  worst_dp5 = math.max(worst_dp5, math.abs(b - want))
  print(string.format("%5.1f  %12.8f  %12.8f  %9.2e  %12.8f  %9.2e", t, want, a, math.abs(a - want), b, math.abs(b - want)))
end
print()
print(string.format("rk4    (step 0.1):               %4d evaluations, %3d steps,              max error %.2e",
  rk4_stats.nfe, rk4_stats.accepted, worst_rk4))
print(string.format("dopri5 (rtol 1e-6, atol 1e-8):  %4d evaluations, %3d steps (%2d rejected), max error %.2e",
  dp5_stats.nfe, dp5_stats.accepted, dp5_stats.rejected, worst_dp5))
