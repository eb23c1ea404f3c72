# description: without swap, touching more than RAM makes the OOM killer pick the largest oom_badness and kill it
boot mem=64M
spawn idle
malloc x 2M
touch x
spawn protected adj=-1000
malloc y 4M
touch y
spawn hog
repeat 4
malloc big$i 20M
touch big$i
end
use idle
touch x
report top,free
