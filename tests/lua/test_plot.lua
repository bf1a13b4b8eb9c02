-- test_plot.lua — lua/cunet/plot.lua: a PNG of the requested size with its CSV beside it, the CSV's
-- exact contents, a clear message (and the CSV kept) when gnuplot is missing, errors on bad arguments.
local lu = require "luaunit"
local cn = require "cunet"
local plot = require "cunet.plot"

local read = require("helpers").read_file

local function series()
  return {
    { name = "DDIM", x = { 1, 2, 5, 10 }, y = { 200.5, 120, 40, 12.25 } },
    { name = "DDPM, respaced", x = { 1, 10, 100 }, y = { 300, 30, 0 / 0 } },
  }
end

TestPlot = {}

function TestPlot:setUp()
  self.base = os.tmpname()
  self.png, self.csv = self.base .. ".png", self.base .. ".csv"
  self.command = plot.command
end

function TestPlot:tearDown()
  plot.command = self.command
  for _, p in ipairs { self.base, self.png, self.csv } do os.remove(p) end
end

function TestPlot:testCsv()
  lu.assertEquals(plot.write_csv(self.csv, series()), self.csv)
  lu.assertEquals(read(self.csv), "series,x,y\nDDIM,1,200.5\nDDIM,2,120\nDDIM,5,40\nDDIM,10,12.25\n" ..
    '"DDPM, respaced",1,300\n"DDPM, respaced",10,30\n"DDPM, respaced",100,NaN\n')
end

function TestPlot:testPng()
  if not plot.gnuplot() then lu.skip("gnuplot is not installed (make deps)") end
  local png, csv = plot.lines(self.png, { title = "FID (classifier features)", xlabel = "steps", ylabel = "FID",
    series = series(), logx = true, width = 640, height = 400 })
  lu.assertEquals(png, self.png)
  lu.assertEquals(csv, self.csv)
  lu.assertEquals(read(self.png):sub(1, 8), "\137PNG\r\n\26\n")
  local img = cn.load_png(self.png)
  lu.assertEquals({ img:size(2), img:size(3) }, { 400, 640 })
  -- not a blank image: the curves and axes leave dark pixels on the white page
  lu.assertTrue(img:min():item() < 0.5)
  lu.assertStrContains(read(self.csv), "DDIM,10,12.25")
end

function TestPlot:testMissingGnuplot()
  plot.command = "gnuplot-not-installed-here"
  local ok, err = plot.lines(self.png, { series = series() })
  lu.assertNil(ok)
  lu.assertStrContains(err, "gnuplot is not installed")
  lu.assertStrContains(err, "gnuplot-nox")
  lu.assertStrContains(err, self.csv)
  lu.assertStrContains(read(self.csv), "series,x,y") -- the numbers are kept
end

function TestPlot:testBadArguments()
  lu.assertErrorMsgContains("non-empty list", plot.lines, self.png, { series = {} })
  lu.assertErrorMsgContains("3 x values and 2 y values", plot.lines, self.png,
    { series = { { name = "a", x = { 1, 2, 3 }, y = { 1, 2 } } } })
  lu.assertErrorMsgContains("unknown option 'colour'", plot.lines, self.png,
    { series = series(), colour = "red" })
end
