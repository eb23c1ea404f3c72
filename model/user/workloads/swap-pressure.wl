# description: anonymous memory beyond RAM: kswapd and direct reclaim swap pages out; touching them again swaps in
boot mem=64M swap=64M
file /data/cache 8M
spawn hog
read /data/cache
malloc a 40M
touch a
malloc b 20M
touch b
load a 0 8M
report vmstat,free
