set terminal pngcairo size 900,560
set output 'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.png'
set title "DPM-Solver++(2M) (trailing): FID vs steps (seed range shaded)"
set xlabel 'sampling steps'
set ylabel 'FID (classifier features) (lower is better)'
set logscale x
set logscale y
set key top right
set grid
plot 'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 0 using 1:3:4 with filledcurves fs transparent solid 0.2 lc 1 notitle, \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 0 using 1:2 with linespoints lc 1 lw 2 title "authors' U-Net 0.28 M", \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 1 using 1:3:4 with filledcurves fs transparent solid 0.2 lc 2 notitle, \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 1 using 1:2 with linespoints lc 2 lw 2 title "authors' cU-Net 0.28 M", \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 2 using 1:3:4 with filledcurves fs transparent solid 0.2 lc 3 notitle, \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 2 using 1:2 with linespoints lc 3 lw 2 title "authors' U-Net 1.1 M", \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 3 using 1:3:4 with filledcurves fs transparent solid 0.2 lc 4 notitle, \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 3 using 1:2 with linespoints lc 4 lw 2 title "authors' cU-Net 1.1 M", \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 4 using 1:3:4 with filledcurves fs transparent solid 0.2 lc 5 notitle, \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 4 using 1:2 with linespoints lc 5 lw 2 title "Ho U-Net 1.1 M", \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 5 using 1:3:4 with filledcurves fs transparent solid 0.2 lc 6 notitle, \
  'docs/images/study/fid_vs_steps_dpmpp_2m_trailing.dat' index 5 using 1:2 with linespoints lc 6 lw 2 title "Ho cU-Net 1.1 M"
