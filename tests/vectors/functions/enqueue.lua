-- enqueue (test vector): refused under OOM
return twice(#KEYS)
