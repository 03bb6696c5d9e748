def square(x):
    x * x
