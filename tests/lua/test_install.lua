-- test_install.lua — `make install PREFIX=DIR` (Makefile): the installed cunet runs the installed
-- sample.lua recipe on the installed checkpoint from another directory, finds the installed
-- classifier, and the docs are there. Uses the build under test (CUNET_EXE's folder).
local lu = require "luaunit"
local helpers = require "helpers"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

TestInstall = {}

function TestInstall:testInstalledRecipeRunsElsewhere()
  local exe = os.getenv("CUNET_EXE") or "./cunet"
  local build = exe:match("^(.*)/cunet$") or "build"
  if build == "." then build = "build" end
  local prefix = helpers.temp_path()
  local ok, out = sh(string.format("make -s install PREFIX=%s BUILD=%s", prefix, build))
  lu.assertTrue(ok, out)
  local share = prefix .. "/share/cunet"
  local png = prefix .. "/samples.png"
  ok, out = sh(string.format("cd / && %s/bin/cunet %s/recipes/sample.lua --ckpt %s/checkpoints/study/authors_unet_028m_s0.safetensors " ..
    "--n 2 --steps 2 --out %s", prefix, share, share, png))
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "wrote " .. png)
  lu.assertNotNil(io.open(png, "rb"))
  ok, out = sh(string.format("cd / && %s/bin/cunet -e 'print(require(\"cunet.fid\").checkpoint_path(\"mnist\"))'", prefix))
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, share .. "/lua/cunet/../../checkpoints/classifier_mnist.safetensors")
  lu.assertNotNil(io.open(prefix .. "/share/doc/cunet/benchmarks.md", "rb"))
  lu.assertNotNil(io.open(share .. "/examples/profile_model.lua", "rb"))
  ok, out = sh(string.format("make -s uninstall PREFIX=%s", prefix))
  lu.assertTrue(ok, out)
  lu.assertNil(io.open(prefix .. "/bin/cunet", "rb"))
  helpers.remove_dir(prefix)
end
